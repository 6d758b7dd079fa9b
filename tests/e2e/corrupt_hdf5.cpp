// e2e_corrupt_hdf5: damages an HDF5 file the way a failing disk or a stray
// write would, for tests of what reads it.
//
//   e2e_corrupt_hdf5 flip-data FILE DATASET   flips one bit in the middle of
//       DATASET's stored bytes (a contiguous dataset), leaving the metadata
//       intact;
//   e2e_corrupt_hdf5 flip-name FILE NAME      flips one bit of the first copy
//       of the link name NAME in the file's metadata (outside the `manifest`
//       dataset's bytes, when there is one), so HDF5 no longer finds it.
//
// Prints what it changed; exits 1 with one line when it cannot.
#include <hdf5.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>

namespace {

// [offset, offset + size) of a contiguous dataset's bytes in the file.
std::pair<haddr_t, hsize_t> stored_bytes(const std::string& path, const std::string& dataset) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) throw std::runtime_error("cannot open " + path);
  std::pair<haddr_t, hsize_t> where{HADDR_UNDEF, 0};
  if (H5Lexists(file, dataset.c_str(), H5P_DEFAULT) > 0) {
    const hid_t d = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
    if (d >= 0) {
      where = {H5Dget_offset(d), H5Dget_storage_size(d)};
      H5Dclose(d);
    }
  }
  H5Fclose(file);
  return where;
}

void flip_bit(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path + " for writing");
  f.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  f.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x04);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&byte, 1);
  if (!f) throw std::runtime_error("cannot write " + path);
}

void flip_data(const std::string& path, const std::string& dataset) {
  const auto [offset, size] = stored_bytes(path, dataset);
  if (offset == HADDR_UNDEF || size == 0) {
    throw std::runtime_error(path + ": " + dataset + " is not a contiguous dataset with data");
  }
  const uint64_t at = offset + size / 2;
  flip_bit(path, at);
  std::cout << "flipped one bit of " << dataset << " in " << path << " at byte " << at << std::endl;
}

void flip_name(const std::string& path, const std::string& name) {
  const auto [manifest, manifest_size] = stored_bytes(path, "manifest");
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t at = bytes.find(name); at != std::string::npos; at = bytes.find(name, at + 1)) {
    const bool in_manifest = manifest != HADDR_UNDEF && at >= manifest && at < manifest + manifest_size;
    if (in_manifest) continue;
    flip_bit(path, at + name.size() / 2);
    std::cout << "flipped one bit of the name " << name << " in " << path << " at byte " << at + name.size() / 2
              << std::endl;
    return;
  }
  throw std::runtime_error(path + ": the name " + name + " is not in the file's metadata");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: e2e_corrupt_hdf5 flip-data|flip-name FILE DATASET|NAME" << std::endl;
    return 1;
  }
  try {
    const std::string mode = argv[1];
    if (mode == "flip-data") {
      flip_data(argv[2], argv[3]);
    } else if (mode == "flip-name") {
      flip_name(argv[2], argv[3]);
    } else {
      throw std::runtime_error("unknown mode " + mode);
    }
  } catch (const std::exception& e) {
    std::cerr << "e2e_corrupt_hdf5: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
