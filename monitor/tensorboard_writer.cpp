#include "monitor/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "monitor/crc32c.h"

namespace moetrain::monitor {
namespace {

// Protocol-buffer wire encoding of the few field types an Event needs.
class Message {
 public:
  Message& int64_field(int field, int64_t v) {
    key(field, 0);
    varint(static_cast<uint64_t>(v));
    return *this;
  }
  Message& double_field(int field, double v) {
    key(field, 1);
    little_endian(&v, sizeof v);
    return *this;
  }
  Message& float_field(int field, float v) {
    key(field, 5);
    little_endian(&v, sizeof v);
    return *this;
  }
  Message& bytes_field(int field, const std::string& v) {
    key(field, 2);
    varint(v.size());
    bytes_ += v;
    return *this;
  }
  Message& message_field(int field, const Message& m) { return bytes_field(field, m.bytes_); }
  const std::string& bytes() const { return bytes_; }

 private:
  void key(int field, int wire_type) { varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type)); }
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) bytes_.push_back(static_cast<char>((v & 0x7F) | 0x80));
    bytes_.push_back(static_cast<char>(v));
  }
  void little_endian(const void* p, size_t n) {
    static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "event files are little-endian");
    bytes_.append(static_cast<const char*>(p), n);
  }
  std::string bytes_;
};

// Event field numbers (tensorboard_event.proto).
enum EventField { kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7 };
constexpr int kSessionStart = 1;

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Message event(int64_t step) {
  Message e;
  e.double_field(kWallTime, wall_time()).int64_field(kStep, step);
  return e;
}

// events.out.tfevents.<seconds>.<microseconds>.<host>.<pid>: TensorBoard
// reads a folder's files in name order, so a later segment sorts later.
std::string event_file_name() {
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  char name[400];
  std::snprintf(name, sizeof(name), "events.out.tfevents.%010lld.%06lld.%s.%d", static_cast<long long>(us / 1000000),
                static_cast<long long>(us % 1000000), host, static_cast<int>(getpid()));
  return name;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t first_step) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  path_ = (std::filesystem::path(dir) / event_file_name()).string();
  if (!ec) out_.open(path_, std::ios::binary | std::ios::trunc);
  if (ec || !out_) {
    throw std::runtime_error("cannot write TensorBoard events to " + path_ + ": " +
                             (ec ? ec.message() : std::strerror(errno)));
  }
  write_record(event(first_step).bytes_field(kFileVersion, "brain.Event:2").bytes());
  write_record(event(first_step).message_field(kSessionLog, Message().int64_field(1, kSessionStart)).bytes());
  out_.flush();
}

void TensorBoardWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars) {
  Message summary;
  for (const auto& [tag, value] : scalars) {
    summary.message_field(1, Message().bytes_field(1, tag).float_field(2, static_cast<float>(value)));
  }
  write_record(event(step).message_field(kSummary, summary).bytes());
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write TensorBoard events to " + path_ + " (disk full?)");
}

void TensorBoardWriter::write_record(const std::string& event) {
  char header[12];
  const uint64_t length = event.size();
  std::memcpy(header, &length, 8);
  const uint32_t length_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &length_crc, 4);
  const uint32_t data_crc = masked_crc32c(event.data(), event.size());
  out_.write(header, sizeof header);
  out_.write(event.data(), static_cast<std::streamsize>(event.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
}

}  // namespace moetrain::monitor
