// The Prometheus endpoint over real HTTP on loopback: the exposition text,
// labels and counters, and a busy port refused with its address.
// (tests/e2e/test_prometheus.sh scrapes a training run with Prometheus.)
#include <gtest/gtest.h>
#include <httplib.h>

#include <string>

#include "monitor/prometheus_exporter.h"

using namespace moetrain::monitor;

namespace {

std::string scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  if (!res) return "no answer";
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  return res->body;
}

StepMetrics a_step(int64_t step) {
  StepMetrics m;
  m.step = step;
  m.max_steps = 100;
  m.loss = 2.5;
  m.tokens = 1000;
  m.step_ms = 250;
  m.comm["dp all_reduce"] = {3, 4096, 0.5};
  m.moe_layers = {"encoder.layers.1"};
  m.expert_tokens = {30, 10, 0, 0};
  return m;
}

}  // namespace

TEST(PrometheusExporter, ServesGaugesCountersAndLabels) {
  PrometheusExporter exporter("127.0.0.1", 0, {"my \"run\"", "", 0});
  ASSERT_GT(exporter.port(), 0);
  EXPECT_EQ(scrape(exporter.port()), "") << "nothing before the first step";
  exporter.record_step(a_step(1));
  exporter.record_step(a_step(2));
  exporter.set_phase("adapt");
  exporter.record_eval(2, 1.0);
  const std::string text = scrape(exporter.port());
  const std::string labels = "run=\"my \\\"run\\\"\",phase=\"adapt\",rank=\"0\"";
  EXPECT_NE(text.find("# HELP moetrain_loss "), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE moetrain_loss gauge\nmoetrain_loss{" + labels + "} 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("moetrain_step{" + labels + "} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("moetrain_step_seconds{" + labels + "} 0.25\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE moetrain_tokens_total counter\nmoetrain_tokens_total{" + labels + "} 2000\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("moetrain_communication_bytes_total{" + labels + ",group=\"dp\",op=\"all_reduce\"} 8192\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("moetrain_expert_load_ratio{" + labels + ",layer=\"encoder.layers.1\",expert=\"0\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("moetrain_expert_tokens_total{" + labels + ",layer=\"encoder.layers.1\",expert=\"1\"} 20\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("moetrain_eval_perplexity{" + labels + "} 2.7182818284590451\n"), std::string::npos) << text;
}

TEST(PrometheusExporter, NonFiniteValuesAreSpelledAsPrometheusReadsThem) {
  PrometheusExporter exporter("127.0.0.1", 0, {"r", "", 3});
  StepMetrics m = a_step(1);
  m.loss = std::nan("");
  m.grad_norm = std::numeric_limits<double>::infinity();
  exporter.record_step(m);
  const std::string text = exporter.exposition();
  EXPECT_NE(text.find("moetrain_loss{run=\"r\",rank=\"3\"} NaN\n"), std::string::npos) << text;
  EXPECT_NE(text.find("moetrain_grad_norm{run=\"r\",rank=\"3\"} +Inf\n"), std::string::npos) << text;
}

TEST(PrometheusExporter, ABusyPortIsOneErrorNamingTheAddress) {
  PrometheusExporter first("127.0.0.1", 0, {"a", "", 0});
  try {
    PrometheusExporter second("127.0.0.1", first.port(), {"b", "", 0});
    FAIL() << "a second endpoint bound the same port";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1:" + std::to_string(first.port())),
              std::string::npos)
        << e.what();
  }
}
