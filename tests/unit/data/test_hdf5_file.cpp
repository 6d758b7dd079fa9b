// Hdf5File: bit-exact round trips for every stored dtype, slices, attributes,
// groups, and clear errors for missing objects and damaged files.
#include "data/hdf5_file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

// True when a and b have the same dtype, shape and bytes.
bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  auto ac = a.contiguous();
  auto bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.numel() * ac.element_size()) == 0;
}

torch::Tensor sample_tensor(torch::Dtype dtype, std::vector<int64_t> shape) {
  torch::manual_seed(7);
  auto f = torch::randn(shape, torch::kFloat64) * 1000;
  if (dtype == torch::kBool) return f.gt(0);
  if (dtype == torch::kUInt8) return f.abs().remainder(256).to(torch::kUInt8);
  // bf16/fp16: include values that are not representable in the other format
  // and special values, so a lossy conversion anywhere would show.
  auto t = f.to(dtype);
  if (t.is_floating_point() && t.numel() >= 3) {
    auto flat = t.view({-1});
    flat[0] = std::numeric_limits<double>::infinity();
    flat[1] = -0.0;
    flat[2] = 1e-7;  // subnormal in fp16
  }
  return t;
}

std::string dtype_attribute(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kInt32: return "int32";
    case torch::kInt64: return "int64";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    case torch::kInt8: return "int8";
    case torch::kInt16: return "int16";
    default: return "?";
  }
}

class Hdf5DtypeRoundTrip : public ::testing::TestWithParam<torch::Dtype> {};

TEST_P(Hdf5DtypeRoundTrip, BitExactWithDtype) {
  TempDir dir;
  const torch::Dtype dtype = GetParam();
  auto t1 = sample_tensor(dtype, {37});
  auto t3 = sample_tensor(dtype, {3, 4, 5});
  auto t0 = sample_tensor(dtype, {});  // 0-d
  auto empty = torch::empty({0, 4}, dtype);
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("one", t1);
    f.write_tensor("grp/three", t3);
    f.write_tensor("scalar", t0);
    f.write_tensor("empty", empty);
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  EXPECT_TRUE(bitwise_equal(f.read_tensor("one"), t1));
  EXPECT_TRUE(bitwise_equal(f.read_tensor("grp/three"), t3));
  auto s = f.read_tensor("scalar");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_TRUE(bitwise_equal(s, t0));
  auto e = f.read_tensor("empty");
  EXPECT_EQ(e.sizes(), empty.sizes());
  EXPECT_EQ(e.scalar_type(), dtype);
  EXPECT_EQ(f.shape("grp/three"), (std::vector<int64_t>{3, 4, 5}));
  // The dtype attribute says what the tensor was, not how it is stored.
  EXPECT_EQ(f.attr_string("one", "dtype"), dtype_attribute(dtype));
  EXPECT_EQ(f.attr_string("scalar", "dtype"), dtype_attribute(dtype));
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, Hdf5DtypeRoundTrip,
                         ::testing::Values(torch::kFloat32, torch::kFloat64, torch::kInt32, torch::kInt64,
                                           torch::kUInt8, torch::kBool, torch::kBFloat16, torch::kFloat16, torch::kInt8,
                                           torch::kInt16));

TEST(Hdf5File, SixteenBitFloatsStoredAsUint16WithDtypeAttribute) {
  TempDir dir;
  auto bf = torch::tensor({1.5, -2.25, 3.0e38}, torch::kBFloat16);
  auto hf = torch::tensor({1.5, -2.25, 65504.0}, torch::kFloat16);
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("bf", bf);
    f.write_tensor("hf", hf);
    f.write_tensor("flag", torch::tensor({true, false, true}));
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  EXPECT_EQ(f.attr_string("bf", "dtype"), "bfloat16");
  EXPECT_EQ(f.attr_string("hf", "dtype"), "float16");
  EXPECT_EQ(f.attr_string("flag", "dtype"), "bool");
  auto bf_back = f.read_tensor("bf");
  EXPECT_EQ(bf_back.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(bitwise_equal(bf_back.view(torch::kInt16), bf.view(torch::kInt16)));
  auto flag = f.read_tensor("flag");
  EXPECT_EQ(flag.scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(flag, torch::tensor({true, false, true})));
}

TEST(Hdf5File, NonContiguousAndLargeChunkedTensors) {
  TempDir dir;
  auto base = torch::arange(0, 24, torch::kFloat32).view({4, 6});
  auto transposed = base.t();  // not contiguous
  // > 1 MiB: stored chunked; slices across chunk boundaries must still be right.
  auto big = torch::arange(0, 600000, torch::kInt32).view({1000, 600});
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("t", transposed);
    f.write_tensor("big", big);
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  EXPECT_TRUE(torch::equal(f.read_tensor("t"), transposed));
  EXPECT_TRUE(torch::equal(f.read_tensor("big"), big));
  EXPECT_TRUE(torch::equal(f.read_slice("big", {400, 100}, {300, 7}), big.slice(0, 400, 700).slice(1, 100, 107)));
}

TEST(Hdf5File, ReadSlices) {
  TempDir dir;
  auto t = torch::randn({5, 6, 7}, torch::kFloat64);
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("w", t);
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  auto s = f.read_slice("w", {1, 2, 3}, {3, 2, 4});
  EXPECT_TRUE(torch::equal(s, t.slice(0, 1, 4).slice(1, 2, 4).slice(2, 3, 7)));
  auto zero = f.read_slice("w", {0, 0, 0}, {0, 6, 7});
  EXPECT_EQ(zero.sizes(), (std::vector<int64_t>{0, 6, 7}));
  EXPECT_THROW(f.read_slice("w", {4, 0, 0}, {2, 6, 7}), Hdf5Error);  // past the end
  EXPECT_THROW(f.read_slice("w", {0, 0}, {1, 1}), Hdf5Error);        // wrong rank
  EXPECT_THROW(f.read_slice("w", {-1, 0, 0}, {1, 1, 1}), Hdf5Error);
}

TEST(Hdf5File, AttributesOfEveryType) {
  TempDir dir;
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("layers/0/w", torch::zeros({2}));
    f.set_attr("/", "step", int64_t{-42});
    f.set_attr("/", "lr", 3.5e-4);
    f.set_attr("/", "name", std::string("moe \xE2\x9C\x93"));
    f.set_attr("/", "empty", std::string());
    f.set_attr("layers/0/w", "global_shape", std::vector<int64_t>{1024, 4096});
    f.set_attr("layers/0/w", "no_dims", std::vector<int64_t>{});
    f.set_attr("layers", "count", int64_t{1});
    f.set_attr("/", "step", int64_t{7});  // replaced, not duplicated
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  EXPECT_EQ(f.attr_int("/", "step"), 7);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "lr"), 3.5e-4);
  EXPECT_EQ(f.attr_string("/", "name"), "moe \xE2\x9C\x93");
  EXPECT_EQ(f.attr_string("/", "empty"), "");
  EXPECT_EQ(f.attr_ints("layers/0/w", "global_shape"), (std::vector<int64_t>{1024, 4096}));
  EXPECT_TRUE(f.attr_ints("layers/0/w", "no_dims").empty());
  EXPECT_EQ(f.attr_int("layers", "count"), 1);
  EXPECT_TRUE(f.has_attr("/", "lr"));
  EXPECT_FALSE(f.has_attr("/", "missing"));
  EXPECT_FALSE(f.has_attr("nowhere", "x"));
  // Wrong type or missing: Hdf5Error, not a garbage value.
  EXPECT_THROW(f.attr_int("/", "name"), Hdf5Error);
  EXPECT_THROW(f.attr_string("/", "step"), Hdf5Error);
  EXPECT_THROW(f.attr_int("/", "missing"), Hdf5Error);
  EXPECT_THROW(f.attr_int("layers/0/w", "global_shape"), Hdf5Error);  // not a single value
}

TEST(Hdf5File, GroupsExistsAndList) {
  TempDir dir;
  {
    Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
    f.write_tensor("b", torch::zeros({1}));
    f.write_tensor("a/x/y", torch::zeros({1}));
    f.write_tensor("a/z", torch::zeros({1}));
    f.write_tensor("b", torch::ones({3}));  // rewrite replaces
    f.flush();
  }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.list(""), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.list("a"), (std::vector<std::string>{"x", "z"}));
  EXPECT_TRUE(f.exists("a/x/y"));
  EXPECT_TRUE(f.exists("/a/x"));
  EXPECT_FALSE(f.exists("a/q/y"));  // missing intermediate group
  EXPECT_FALSE(f.exists("c"));
  EXPECT_TRUE(torch::equal(f.read_tensor("b"), torch::ones({3})));
  EXPECT_THROW(f.list("b"), Hdf5Error);         // a dataset, not a group
  EXPECT_THROW(f.read_tensor("a"), Hdf5Error);  // a group, not a dataset
}

TEST(Hdf5File, MissingDatasetNamesFileAndObject) {
  TempDir dir;
  { Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create); }
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Read);
  try {
    f.read_tensor("weights/missing");
    FAIL() << "expected Hdf5Error";
  } catch (const Hdf5Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("t.h5")), std::string::npos) << msg;
    EXPECT_NE(msg.find("weights/missing"), std::string::npos) << msg;
  }
  EXPECT_THROW(f.shape("nope"), Hdf5Error);
  EXPECT_THROW(f.write_tensor("x", torch::zeros({1})), Hdf5Error);  // read-only
}

TEST(Hdf5File, UnsupportedDtypeThrows) {
  TempDir dir;
  Hdf5File f(dir.file("t.h5"), Hdf5File::Mode::Create);
  EXPECT_THROW(f.write_tensor("c", torch::zeros({2}, torch::kComplexFloat)), Hdf5Error);
}

TEST(Hdf5File, MoveKeepsTheFileOpen) {
  TempDir dir;
  Hdf5File a(dir.file("t.h5"), Hdf5File::Mode::Create);
  Hdf5File b = std::move(a);
  b.write_tensor("x", torch::ones({2}));
  Hdf5File c(dir.file("u.h5"), Hdf5File::Mode::Create);
  c = std::move(b);
  c.write_tensor("y", torch::ones({2}));
  EXPECT_EQ(c.path(), dir.file("t.h5"));
  EXPECT_TRUE(c.exists("x"));
}

TEST(Hdf5File, DamagedFilesThrowHdf5Error) {
  TempDir dir;
  // Random bytes.
  std::string noise(4096, '\0');
  std::mt19937 gen(3);
  for (char& c : noise) c = static_cast<char>(gen() & 0xff);
  test_support::write_file(dir.file("noise.h5"), noise);
  EXPECT_THROW(Hdf5File(dir.file("noise.h5"), Hdf5File::Mode::Read), Hdf5Error);
  // Empty file, missing file.
  test_support::write_file(dir.file("empty.h5"), "");
  EXPECT_THROW(Hdf5File(dir.file("empty.h5"), Hdf5File::Mode::Read), Hdf5Error);
  EXPECT_THROW(Hdf5File(dir.file("absent.h5"), Hdf5File::Mode::Read), Hdf5Error);

  // A real file cut short at several points.
  {
    Hdf5File f(dir.file("full.h5"), Hdf5File::Mode::Create);
    f.write_tensor("tokens", torch::arange(0, 400000, torch::kInt32));
    f.write_tensor("small", torch::arange(0, 10, torch::kInt64));
    f.set_attr("/", "kind", std::string("documents"));
  }
  const std::string full = test_support::read_file(dir.file("full.h5"));
  for (double fraction : {0.01, 0.3, 0.6, 0.95, 0.999}) {
    const std::string path = dir.file("cut.h5");
    test_support::write_file(path, full.substr(0, static_cast<size_t>(full.size() * fraction)));
    bool threw = false;
    try {
      Hdf5File f(path, Hdf5File::Mode::Read);
      f.read_tensor("tokens");
      f.read_tensor("small");
      f.attr_string("/", "kind");
    } catch (const Hdf5Error& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    EXPECT_TRUE(threw) << "truncated to " << fraction;
  }
}

}  // namespace
}  // namespace moetrain::data
