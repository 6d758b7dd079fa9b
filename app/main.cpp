// The moetrain binary: everything happens in the sub-commands of app/.
#include "app/run_command.h"
#include "data/hdf5_file.h"

int main(int argc, char** argv) {
  moetrain::data::skip_hdf5_shutdown_at_exit();
  return moetrain::app::run_command(argc, argv);
}
