// The moetrain binary: everything happens in the sub-commands of trainer/cli.
#include "trainer/cli.h"

int main(int argc, char** argv) { return moetrain::trainer::run_cli(argc, argv); }
