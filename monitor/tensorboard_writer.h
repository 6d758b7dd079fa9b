// TensorBoardWriter: one TensorBoard event file for one segment of a run
// (a process from its start or resume to its end), in TensorBoard's record
// format: each record is its length (8 bytes, little-endian), the masked
// CRC-32C of those 8 bytes, an Event protocol message
// (monitor/tensorboard_event.proto) and its masked CRC-32C.
//
// A resumed run repeats the steps after its checkpoint: each file starts with
// a session-start event at the segment's first step, which tells TensorBoard
// to drop what earlier files of the folder recorded at that step and after,
// as metrics.jsonl drops those lines.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::monitor {

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.* file in it whose first
  // step is `first_step`. Throws std::runtime_error naming the path when it
  // cannot.
  TensorBoardWriter(const std::string& dir, int64_t first_step);

  // One event of scalars (tag, value) at `step`, written and flushed, so a
  // TensorBoard watching the folder sees it at once. Values are stored as
  // float, as TensorBoard's scalar summaries hold them.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::ofstream out_;
};

}  // namespace moetrain::monitor
