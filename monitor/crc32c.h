// CRC-32C (Castagnoli), as TensorBoard's record format checksums its
// lengths and payloads, and the "masked" form it stores.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moetrain::monitor {

uint32_t crc32c(const void* data, size_t size);

// The stored form: rotated right by 15 bits plus a constant, so that a CRC
// computed over bytes that contain CRCs does not degenerate.
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace moetrain::monitor
