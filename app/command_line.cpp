#include "app/command_line.h"

#include <iostream>
#include <sstream>

namespace po = boost::program_options;

namespace moetrain::app {

po::variables_map parse_command_line(int argc, char** argv, const po::options_description& options,
                                     const std::string& command) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: moetrain " << command << " [options]\n\n" << options << std::endl;
      return vm;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(command + ": " + e.what());
  }
  return vm;
}

std::vector<std::string> split_comma_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace moetrain::app
