// Progress lines of long commands: the text, and when a log gets a line.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "monitor/metrics_logger.h"
#include "monitor/progress.h"

using namespace moetrain::monitor;
using namespace std::chrono_literals;

namespace {

// What `run` wrote to a temporary file standing for a log.
template <class F>
std::string written(F&& run) {
  std::FILE* f = std::tmpfile();
  run(f);
  std::fflush(f);
  std::rewind(f);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), f)) text += buf;
  std::fclose(f);
  return text;
}

}  // namespace

TEST(Progress, ALineHasCountsRatesElapsedAndEta) {
  Progress p("generate", "lines", 100, 10.0, nullptr);
  std::this_thread::sleep_for(50ms);
  p.update(25, {{"tokens", 500}, {"MB", 2.5}});
  const std::string line = p.line();
  EXPECT_EQ(line.rfind("generate: 25/100 lines (25%) | ", 0), 0u) << line;
  EXPECT_NE(line.find(" lines/s | "), std::string::npos) << line;
  EXPECT_NE(line.find(" tokens/s | "), std::string::npos) << line;
  EXPECT_NE(line.find(" MB/s | elapsed 0:00:00 | eta 0:00:00"), std::string::npos) << line;
  Progress unknown("clean", "documents", 0, 10.0, nullptr);
  unknown.update(7);
  EXPECT_EQ(unknown.line().rfind("clean: 7 documents | ", 0), 0u) << unknown.line();
  EXPECT_EQ(unknown.line().find("eta"), std::string::npos) << unknown.line();
  EXPECT_EQ(format_duration(3725.4), "1:02:05");
}

TEST(Progress, ALogGetsALinePerIntervalAndALastOne) {
  const std::string quiet = written([](std::FILE* f) {
    Progress p("eval", "samples", 10, 10.0, f);
    p.update(5);
    p.update(10);
  });
  EXPECT_EQ(quiet, "") << "a command shorter than the interval prints nothing";
  const std::string text = written([](std::FILE* f) {
    Progress p("eval", "samples", 10, 0.05, f);
    p.update(1);
    std::this_thread::sleep_for(80ms);
    p.update(4);
    p.update(6);  // within the interval: no line
    p.update(10);
  });
  EXPECT_EQ(text.find("eval: 1/"), std::string::npos) << text;
  EXPECT_NE(text.find("eval: 4/10 samples (40%)"), std::string::npos) << text;
  EXPECT_EQ(text.find("eval: 6/"), std::string::npos) << text;
  EXPECT_NE(text.find("eval: 10/10 samples (100%)"), std::string::npos) << "the last line, at the end: " << text;
}
