// Byte messages of any length between the ranks of a Communicator: the two
// exchanges the cleaning pipeline's distributed dedup needs (its
// data::clean::Exchange is adapted to these in app/clean_command.cpp, so
// data/ stays free of MPI and parallel/ of the cleaning code).
//
// Both are collectives: every rank of `comm` calls them, in the same order.
// Sizes travel first (one small exchange), then the bytes: one all-to-all of
// uint8 rows, or for the gather one all-gather of the messages padded to the
// longest. A message over the backend's count limit (2^31 - 1 elements on
// MPI) fails with the communicator's one-line error.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

using ByteMessage = std::vector<uint8_t>;

// send[r] goes to rank r; returns what each rank sent to this one, by rank.
// send.size() must equal comm.size().
std::vector<ByteMessage> all_to_all_bytes(Communicator& comm, const std::vector<ByteMessage>& send);

// Every rank's `mine`, by rank.
std::vector<ByteMessage> all_gather_bytes(Communicator& comm, const ByteMessage& mine);

// Each rank's failure (`mine`, "" for none): the first one in rank order and
// the rank it came from, the same on every rank; {-1, ""} when no rank
// failed. Lets every rank agree that a collective step failed, and why.
std::pair<int64_t, std::string> first_failure(Communicator& comm, const std::string& mine);

}  // namespace moetrain::parallel
