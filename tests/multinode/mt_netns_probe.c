/* mt_netns_probe: a tiny MPI program for the multi-node tests.
 *
 *   mt_netns_probe check HOSTS
 *     Every rank reports its network namespace (the inode of /proc/self/ns/net)
 *     and its IPv4 addresses; rank 0 prints one line per rank, checks that an
 *     MPI_Allreduce of the ranks gives 0+1+...+(n-1), that the ranks sit in
 *     exactly HOSTS distinct network namespaces, and prints "PASS". Exit 0 on
 *     success, 1 on a wrong result.
 *
 *   mt_netns_probe loop SECONDS [TIMEOUT_S]
 *     All-reduces a small buffer every 20 ms for SECONDS seconds (rank 0 prints
 *     "iteration N" once a second). With TIMEOUT_S > 0 each all-reduce is
 *     non-blocking and polled: one that takes longer than TIMEOUT_S makes the
 *     rank print a one-line message naming itself and the operation and call
 *     MPI_Abort, as moetrain does with parallel.timeout_s. With TIMEOUT_S = 0
 *     it blocks in MPI_Allreduce and relies on Open MPI to notice a dead peer.
 *     Used to observe what a cut link does to a job.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ADDR_LEN 128

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall-clock time of day, for lines a test correlates with its own clock. */
static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The IPv4 addresses of every interface except loopback, comma-separated. */
static void local_addresses(char* out, size_t len) {
  struct ifaddrs* list = NULL;
  out[0] = '\0';
  if (getifaddrs(&list) != 0) {
    snprintf(out, len, "?");
    return;
  }
  for (struct ifaddrs* a = list; a != NULL; a = a->ifa_next) {
    if (a->ifa_addr == NULL || a->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in*)a->ifa_addr)->sin_addr, buf, sizeof buf);
    if (strncmp(buf, "127.", 4) == 0) continue;
    if (out[0] != '\0') strncat(out, ",", len - strlen(out) - 1);
    strncat(out, buf, len - strlen(out) - 1);
  }
  freeifaddrs(list);
}

static int check(int hosts) {
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  long sum = 0, mine = rank;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

  struct stat st;
  unsigned long long netns = 0;
  if (stat("/proc/self/ns/net", &st) == 0) netns = (unsigned long long)st.st_ino;
  char addr[ADDR_LEN];
  local_addresses(addr, sizeof addr);

  unsigned long long* all_ns = rank == 0 ? calloc((size_t)size, sizeof *all_ns) : NULL;
  char* all_addr = rank == 0 ? calloc((size_t)size, ADDR_LEN) : NULL;
  MPI_Gather(&netns, 1, MPI_UNSIGNED_LONG_LONG, all_ns, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  MPI_Gather(addr, ADDR_LEN, MPI_CHAR, all_addr, ADDR_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);

  int ok = 1;
  if (rank == 0) {
    int distinct = 0;
    for (int r = 0; r < size; ++r) {
      int seen = 0;
      for (int q = 0; q < r; ++q) seen |= all_ns[q] == all_ns[r];
      distinct += !seen;
      printf("rank %d: netns %llu addresses %s\n", r, all_ns[r], all_addr + (size_t)r * ADDR_LEN);
    }
    const long want = (long)size * (size - 1) / 2;
    printf("allreduce sum of ranks: %ld (want %ld)\n", sum, want);
    printf("distinct network namespaces: %d (want %d)\n", distinct, hosts);
    ok = sum == want && distinct == hosts;
    printf("%s\n", ok ? "PASS" : "FAIL");
    fflush(stdout);
    free(all_ns);
    free(all_addr);
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return ok ? 0 : 1;
}

static int loop(double seconds, double timeout_s) {
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  double buf[1024], out[1024];
  for (int i = 0; i < 1024; ++i) buf[i] = rank;

  const double start = now_s();
  double last_print = start - 1.0;
  long it = 0;
  while (now_s() - start < seconds) {
    if (timeout_s > 0) {
      MPI_Request req;
      MPI_Iallreduce(buf, out, 1024, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
      const double t0 = now_s();
      int done = 0;
      while (!done) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done) break;
        if (now_s() - t0 > timeout_s) {
          char addr[ADDR_LEN];
          local_addresses(addr, sizeof addr);
          fprintf(stderr,
                  "mt_netns_probe: rank %d (%s): all_reduce (iteration %ld) timed out after %.0f s; "
                  "aborting the job (wall %.3f)\n",
                  rank, addr, it, timeout_s, wall_s());
          fflush(stderr);
          MPI_Abort(MPI_COMM_WORLD, 3);
        }
        usleep(1000);
      }
    } else {
      MPI_Allreduce(buf, out, 1024, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    const double want = (double)size * (size - 1) / 2;
    if (out[0] != want || out[1023] != want) {
      fprintf(stderr, "mt_netns_probe: rank %d: wrong all_reduce result %g (want %g)\n", rank, out[0], want);
      MPI_Abort(MPI_COMM_WORLD, 4);
    }
    ++it;
    if (rank == 0 && now_s() - last_print >= 1.0) {
      printf("iteration %ld (wall %.3f)\n", it, wall_s());
      fflush(stdout);
      last_print = now_s();
    }
    usleep(20000);
  }
  if (rank == 0) printf("PASS: %ld iterations\n", it);
  return 0;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 2;
  if (argc >= 3 && strcmp(argv[1], "check") == 0) {
    rc = check(atoi(argv[2]));
  } else if (argc >= 3 && strcmp(argv[1], "loop") == 0) {
    rc = loop(atof(argv[2]), argc >= 4 ? atof(argv[3]) : 0.0);
  } else {
    fprintf(stderr, "usage: mt_netns_probe check HOSTS | loop SECONDS [TIMEOUT_S]\n");
  }
  MPI_Finalize();
  return rc;
}
