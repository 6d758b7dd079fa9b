// e2e_tokenizer_ids TOKENIZER LINES OUT.jsonl [LANG]: moetrain's ids for each
// line of LINES, and the text they decode to, for tests that compare them with
// another tokenizer's.
//
// Line i of OUT is {"ids": [...], "text": "..."}: the ids are the line's
// tokens (after LANG's language code when given) then EOS, as `moetrain
// tokenize` and the seq2seq objective give the model a sequence; the text is
// the decoding of the ids (special tokens and language codes decode to
// nothing). Exits 1 with one line on stderr when something is wrong.
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "data/tokenizer.h"

int main(int argc, char** argv) {
  using moetrain::data::Tokenizer;
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: e2e_tokenizer_ids TOKENIZER LINES OUT.jsonl [LANG]" << std::endl;
    return 2;
  }
  try {
    const Tokenizer tok = Tokenizer::load(argv[1]);
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string("cannot read ") + argv[2]);
    std::ofstream out(argv[3]);
    if (!out) throw std::runtime_error(std::string("cannot write ") + argv[3]);
    int64_t lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
      std::vector<int64_t> ids;
      if (argc == 5) ids.push_back(tok.language_code_id(argv[4]));
      for (int32_t id : tok.encode(line)) ids.push_back(id);
      ids.push_back(tok.eos_id());
      out << nlohmann::json{{"ids", ids}, {"text", tok.decode(ids)}}.dump() << "\n";
    }
    if (!out.flush()) throw std::runtime_error(std::string("cannot write ") + argv[3]);
    std::cout << "encoded " << lines << " lines with " << argv[1] << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "e2e_tokenizer_ids: " << e.what() << std::endl;
    return 1;
  }
}
