"""Session-wide settings for the test run."""

from threadpoolctl import threadpool_limits

# pytest -n 2 already keeps both cores busy; BLAS threads on top of that
# oversubscribe them (one LeNet batch went from 59 ms to 835 ms here).
threadpool_limits(limits=1)
