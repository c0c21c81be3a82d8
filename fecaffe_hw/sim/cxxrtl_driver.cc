// Generic driver for a CXXRTL-compiled design, spoken to by
// fecaffe_hw/sim/cxxrtl_backend.py over stdin/stdout.
//
// Messages are one opcode byte and little-endian fields; strings are a u32
// length and the bytes. Ports and memories are found once by name through
// cxxrtl::debug_items, so one driver serves every design. An exchange runs
// entirely here: Python only sees its outcome.
//
//   'S' n:u32 name*n          -> ok:u8, then width:u32 * n | message
//   'M' name                  -> ok:u8, then handle:u32 width:u32 depth:u64 | message
//   'V' path                  -> ok:u8 [message]     start a VCD file
//   'W' h:u32 first:u64 n:u64 word:u32*n -> ok:u8
//   'R' h:u32 first:u64 n:u64 -> word:u32*n
//   'X' rx_len:u64 rx:u8*rx_len tx_count:u64 max_cycles:u64
//       -> done:u8 cycles:u64 taken:u64 tx_len:u64 tx:u8*tx_len
//          events:u64 chunks:u32 (cycle:u64 data:u32*chunks)*events
//   'Q'                       -> ok:u8, then the driver exits
//
// The ports of 'S' are, in order: host_rx valid, payload, ready; host_tx
// valid, payload, ready; trace_valid; trace_data; the clock.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "design.cc"
#include <cxxrtl/cxxrtl_vcd.h>

using cxxrtl::debug_item;

namespace {

void read_exact(void *data, size_t size) {
	char *p = static_cast<char *>(data);
	while (size > 0) {
		size_t n = fread(p, 1, size, stdin);
		if (n == 0)
			exit(0);  // the host went away
		p += n;
		size -= n;
	}
}

void write_all(const void *data, size_t size) {
	if (size > 0 && fwrite(data, 1, size, stdout) != size)
		exit(1);
}

template<class T> T get() {
	T value;
	read_exact(&value, sizeof(value));
	return value;
}

template<class T> void put(T value) {
	write_all(&value, sizeof(value));
}

std::string get_string() {
	std::string text(get<uint32_t>(), '\0');
	read_exact(&text[0], text.size());
	return text;
}

void put_string(const std::string &text) {
	put<uint32_t>(text.size());
	write_all(text.data(), text.size());
}

void reply_error(const std::string &message) {
	put<uint8_t>(0);
	put_string(message);
}

// A port, possibly in several debug item parts, read and written as 32-bit chunks.
struct Port {
	std::vector<debug_item> parts;
	size_t width = 0, chunks = 0;
	bool simple = false;  // one value or wire part at bit 0: copy chunks directly

	void bind(const std::vector<debug_item> &found) {
		parts = found;
		for (auto &part : parts)
			width = std::max(width, (size_t)(part.lsb_at + part.width));
		chunks = (width + 31) / 32;
		simple = parts.size() == 1 && parts[0].lsb_at == 0 &&
		         parts[0].type != debug_item::OUTLINE;
	}

	static bool bit(const uint32_t *chunks, size_t index) {
		return (chunks[index / 32] >> (index % 32)) & 1;
	}

	void read(uint32_t *out) const {
		if (simple) {
			memcpy(out, parts[0].curr, chunks * 4);
			return;
		}
		memset(out, 0, chunks * 4);
		for (auto &part : parts) {
			if (part.type == debug_item::OUTLINE)
				part.outline->eval();
			for (size_t i = 0; i < part.width; i++)
				if (bit(part.curr, i))
					out[(part.lsb_at + i) / 32] |= 1u << ((part.lsb_at + i) % 32);
		}
	}

	uint32_t read32() const {
		uint32_t value[8] = {};
		if (chunks > 8)
			abort();
		read(value);
		return value[0];
	}

	void write(const uint32_t *in) const {
		for (auto &part : parts) {
			uint32_t *target = part.next ? part.next : part.curr;
			size_t part_chunks = (part.width + 31) / 32;
			memset(target, 0, part_chunks * 4);
			for (size_t i = 0; i < part.width; i++)
				if (bit(in, part.lsb_at + i))
					target[i / 32] |= 1u << (i % 32);
		}
	}

	void write32(uint32_t value) const {
		if (simple && chunks == 1) {
			uint32_t *target = parts[0].next ? parts[0].next : parts[0].curr;
			*target = value;
			return;
		}
		uint32_t wide[8] = {value};
		if (chunks > 8)
			abort();
		write(wide);
	}
};

struct Memory {
	debug_item item;
	size_t chunks;
};

struct Driver {
	cxxrtl_design::p_top top;
	cxxrtl::debug_items items;
	std::vector<Port> ports;
	std::vector<Memory> memories;
	cxxrtl::vcd_writer vcd;
	FILE *vcd_file = nullptr;
	uint64_t cycles = 0;

	enum { RX_VALID, RX_PAYLOAD, RX_READY, TX_VALID, TX_PAYLOAD, TX_READY,
	       TRACE_VALID, TRACE_DATA, CLK, PORT_COUNT };

	Driver() {
		top.debug_info(&items, /*scopes=*/nullptr, "");
		top.step();
	}

	void setup() {
		uint32_t count = get<uint32_t>();
		std::vector<std::string> names;
		for (uint32_t i = 0; i < count; i++)
			names.push_back(get_string());
		if (count != PORT_COUNT)
			return reply_error("driver expects " + std::to_string(PORT_COUNT) + " ports");
		ports.assign(count, Port());
		for (uint32_t i = 0; i < count; i++) {
			if (items.count(names[i]) == 0 || items.is_memory(names[i]))
				return reply_error("the design has no port named \"" + names[i] + "\"");
			ports[i].bind(items.at(names[i]));
		}
		for (int i : {RX_VALID, RX_READY, TX_VALID, TX_READY, TRACE_VALID, CLK})
			if (ports[i].width != 1)
				return reply_error("port \"" + names[i] + "\" is not 1 bit wide");
		if (ports[RX_PAYLOAD].width > 32 || ports[TX_PAYLOAD].width > 32)
			return reply_error("stream payloads wider than 32 bits are not supported");
		put<uint8_t>(1);
		for (auto &port : ports)
			put<uint32_t>(port.width);
	}

	void lookup_memory() {
		std::string name = get_string();
		if (items.count(name) == 0 || !items.is_memory(name)) {
			std::string known;
			for (auto &entry : items.table)
				if (entry.second.at(0).type == debug_item::MEMORY)
					known += (known.empty() ? "\"" : ", \"") + entry.first + "\"";
			return reply_error("the design has no memory named \"" + name + "\" (memories: " +
			                   (known.empty() ? "none" : known) + ")");
		}
		const debug_item &item = items.at(name).at(0);
		if (items.at(name).size() != 1)
			return reply_error("memory \"" + name + "\" is split into parts");
		memories.push_back(Memory { item, (item.width + 31) / 32 });
		put<uint8_t>(1);
		put<uint32_t>(memories.size() - 1);
		put<uint32_t>(item.width);
		put<uint64_t>(item.depth);
	}

	void start_vcd() {
		std::string path = get_string();
		vcd_file = fopen(path.c_str(), "wb");
		if (!vcd_file)
			return reply_error("cannot write " + path + ": " + strerror(errno));
		// A 100 MHz clock, as in the pysim backend: low for 5 ns, then high.
		vcd.timescale(1, "ns");
		vcd.add_without_memories(items);
		put<uint8_t>(1);
	}

	void flush_vcd(bool force) {
		if (vcd_file && (force || vcd.buffer.size() > (1u << 20))) {
			fwrite(vcd.buffer.data(), 1, vcd.buffer.size(), vcd_file);
			vcd.buffer.clear();
			if (force)
				fflush(vcd_file);
		}
	}

	Memory *memory(uint32_t handle) {
		if (handle >= memories.size())
			abort();
		return &memories[handle];
	}

	void write_memory() {
		Memory *mem = memory(get<uint32_t>());
		uint64_t first = get<uint64_t>(), count = get<uint64_t>();
		std::vector<uint32_t> words(count);
		read_exact(words.data(), count * 4);
		if (first + count > mem->item.depth)
			abort();
		uint32_t mask = mem->item.width >= 32 ? ~0u : (1u << mem->item.width) - 1;
		uint32_t *rows = mem->item.curr + first * mem->chunks;
		if (mem->chunks == 1 && mask == ~0u) {
			memcpy(rows, words.data(), count * 4);
		} else {
			for (uint64_t i = 0; i < count; i++) {
				memset(rows + i * mem->chunks, 0, mem->chunks * 4);
				rows[i * mem->chunks] = words[i] & mask;
			}
		}
		put<uint8_t>(1);
	}

	void read_memory() {
		Memory *mem = memory(get<uint32_t>());
		uint64_t first = get<uint64_t>(), count = get<uint64_t>();
		if (first + count > mem->item.depth)
			abort();
		const uint32_t *rows = mem->item.curr + first * mem->chunks;
		if (mem->chunks == 1) {
			write_all(rows, count * 4);
		} else {
			std::vector<uint32_t> words(count);
			for (uint64_t i = 0; i < count; i++)
				words[i] = rows[i * mem->chunks];
			write_all(words.data(), count * 4);
		}
	}

	void exchange() {
		std::vector<uint8_t> rx(get<uint64_t>());
		read_exact(rx.data(), rx.size());
		uint64_t tx_count = get<uint64_t>(), max_cycles = get<uint64_t>();

		const Port &rx_valid = ports[RX_VALID], &rx_payload = ports[RX_PAYLOAD],
		           &rx_ready = ports[RX_READY], &tx_valid = ports[TX_VALID],
		           &tx_payload = ports[TX_PAYLOAD], &tx_ready = ports[TX_READY],
		           &trace_valid = ports[TRACE_VALID], &trace_data = ports[TRACE_DATA],
		           &clk = ports[CLK];
		size_t trace_chunks = trace_data.chunks;
		std::vector<uint8_t> tx;
		std::vector<uint32_t> events;  // per event: cycle (two chunks), then the data
		std::vector<uint32_t> data(trace_chunks);
		uint64_t taken = 0, ran = 0;

		while ((taken < rx.size() || tx.size() < tx_count) && ran < max_cycles) {
			bool valid = taken < rx.size(), ready = tx.size() < tx_count;
			rx_valid.write32(valid);
			if (valid)
				rx_payload.write32(rx[taken]);
			tx_ready.write32(ready);
			if (vcd_file) {
				// The low half settles this cycle's inputs for the waveform.
				clk.write32(0);
				top.step();
				vcd.sample(10 * cycles);
				clk.write32(1);
				top.eval();
			} else {
				clk.write32(1);
				top.eval();
			}
			// One eval computes every combinational value from the state before
			// the edge and this cycle's inputs (the design is flattened with no
			// combinational wire buffered), so what is sampled here is what the
			// design sees at the rising edge.
			bool rx_fire = valid && rx_ready.read32();
			bool tx_fire = ready && tx_valid.read32();
			uint8_t tx_byte = tx_fire ? tx_payload.read32() : 0;
			if (trace_valid.read32()) {
				trace_data.read(data.data());
				events.push_back(uint32_t(cycles));
				events.push_back(uint32_t(cycles >> 32));
				events.insert(events.end(), data.begin(), data.end());
			}
			top.commit();
			if (vcd_file) {
				top.step();
				vcd.sample(10 * cycles + 5);
				flush_vcd(false);
			}
			// The next rising edge is seen against a low clock.
			clk.write32(0);
			top.commit();
			taken += rx_fire;
			if (tx_fire)
				tx.push_back(tx_byte);
			cycles++;
			ran++;
		}
		rx_valid.write32(0);
		tx_ready.write32(0);
		flush_vcd(true);

		put<uint8_t>(taken == rx.size() && tx.size() == tx_count);
		put<uint64_t>(cycles);
		put<uint64_t>(taken);
		put<uint64_t>(tx.size());
		write_all(tx.data(), tx.size());
		put<uint64_t>(events.size() / (2 + trace_chunks));
		put<uint32_t>(trace_chunks);
		write_all(events.data(), events.size() * 4);
	}

	int serve() {
		for (;;) {
			uint8_t op = get<uint8_t>();
			switch (op) {
				case 'S': setup(); break;
				case 'M': lookup_memory(); break;
				case 'V': start_vcd(); break;
				case 'W': write_memory(); break;
				case 'R': read_memory(); break;
				case 'X': exchange(); break;
				case 'Q':
					flush_vcd(true);
					if (vcd_file)
						fclose(vcd_file);
					put<uint8_t>(1);
					fflush(stdout);
					return 0;
				default:
					fprintf(stderr, "cxxrtl driver: unknown request 0x%02x\n", op);
					return 1;
			}
			fflush(stdout);
		}
	}
};

}  // namespace

int main() {
	// The design and its memories can be large: keep them off the stack.
	Driver *driver = new Driver;
	int status = driver->serve();
	delete driver;
	return status;
}
