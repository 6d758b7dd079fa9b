// Fuzz target: the safetensors reader (export/safetensors.h).
//
// Input: a .safetensors file as is (8-byte little-endian header length, JSON
// header, tensor bytes). The target reads it with read_safetensors; a file
// that reads is written back with write_safetensors and must read again as
// the same tensors (names, dtypes, shapes, bytes) and metadata.
//
// A bug: a crash, a sanitizer report, a hang, an allocation libFuzzer reports
// as out of memory (a header may not make the reader allocate more than the
// file holds), an exception other than std::runtime_error (the documented
// answer to a bad file), or a round trip that changes the file's contents.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "export/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using moetrain::exporting::SafetensorsFile;

void check_same(const SafetensorsFile& a, const SafetensorsFile& b) {
  FUZZ_CHECK(a.metadata == b.metadata, "metadata changed on a round trip");
  FUZZ_CHECK(a.tensors.size() == b.tensors.size(), "tensor count changed on a round trip");
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [name, t] = a.tensors[i];
    const auto& [name_b, u] = b.tensors[i];
    FUZZ_CHECK(name == name_b, "tensor name changed on a round trip: " + name);
    FUZZ_CHECK(t.scalar_type() == u.scalar_type() && t.sizes() == u.sizes(), "tensor changed: " + name);
    FUZZ_CHECK(t.nbytes() == u.nbytes(), "tensor size changed: " + name);
    if (t.nbytes() > 0)
      FUZZ_CHECK(std::memcmp(t.data_ptr(), u.data_ptr(), t.nbytes()) == 0, "tensor bytes changed: " + name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = moetrain::fuzz::write_scratch_file("in.safetensors", data, size);
  SafetensorsFile file;
  try {
    file = moetrain::exporting::read_safetensors(path);
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::string copy = moetrain::fuzz::scratch_dir() + "/copy.safetensors";
  try {
    moetrain::exporting::write_safetensors(copy, file.tensors, file.metadata);
  } catch (const std::invalid_argument& e) {
    FUZZ_CHECK(false, std::string("a file that reads does not write back: ") + e.what());
  }
  check_same(file, moetrain::exporting::read_safetensors(copy));
  return 0;
}
