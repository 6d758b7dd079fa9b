// `moetrain augment`: augmented copies of records (EDA operations, entity
// swaps; data/clean/augment.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "data/clean/augment.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace clean = moetrain::data::clean;

namespace moetrain::app {

int augment_command(int argc, char** argv) {
  clean::AugmentOptions o;
  std::vector<std::string> inputs;
  std::string output, ops, names;
  po::options_description options("augment options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&inputs)->multitoken()->required(), "JSONL or text files")
      ("output,o", po::value(&output)->required(), "JSONL file to write")
      ("ops", po::value(&ops), "operations used in turn: synonym,insert,delete,swap,entity (default all; entity needs --names)")
      ("copies", po::value(&o.copies)->default_value(o.copies), "augmented copies per record")
      ("alpha", po::value(&o.alpha)->default_value(o.alpha), "share of words changed by synonym, insert and swap")
      ("delete-probability", po::value(&o.delete_probability)->default_value(o.delete_probability), "chance of deleting each word")
      ("names", po::value(&names), "name list files, comma separated (one name a line), for entity replacement")
      ("synonyms", po::value(&o.synonym_file), "synonym file: 'word syn1 syn2 ...' a line")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed: the same seed gives the same output")
      ("no-original", "write only the augmented copies")
      ("text-field", po::value(&o.text_field)->default_value(o.text_field), "field holding the text")
      ("id-field", po::value(&o.id_field)->default_value(o.id_field), "field holding the id");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "augment");
  if (vm.count("help")) return 0;
  if (vm.count("ops"))
    o.ops = split_comma_list(ops);
  else if (names.empty())
    o.ops = {"synonym", "insert", "delete", "swap"};
  o.name_files = split_comma_list(names);
  if (vm.count("no-original")) o.keep_original = false;
  if (o.copies < 0) throw UsageError("augment: --copies must be >= 0");
  for (const auto& p : inputs)
    if (!fs::is_regular_file(p)) throw UsageError("augment: input not found: " + p);
  for (const auto& p : o.name_files)
    if (!fs::is_regular_file(p)) throw UsageError("augment: name list not found: " + p);
  const auto s = clean::augment_files(inputs, output, o);
  std::cout << s.records << " records read (" << s.bad << " bad skipped), " << s.written << " written";
  for (const auto& [op, n] : s.by_op) std::cout << ", " << op << " " << n;
  std::cout << "\nwrote " << output << std::endl;
  return 0;
}

}  // namespace moetrain::app
