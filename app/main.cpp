// The moetrain binary: everything happens in the sub-commands of app/.
#include "app/run_command.h"

int main(int argc, char** argv) { return moetrain::app::run_command(argc, argv); }
