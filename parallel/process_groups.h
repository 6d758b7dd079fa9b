// ProcessGroups: every communicator a training run uses, split from the
// world in one place by the ProcessGrid's arithmetic, with the traffic of
// each counted apart.
//
//   world  every rank of the job, over MPI: the control plane (barriers,
//          checkpoint coordination, stop flags, host scalars)
//   dp     the data-parallel group: the ranks holding the same parameters,
//          over which gradients are reduced, ZeRO shards and losses and token
//          counts sum; under context parallelism the DP x CP ranks (the data
//          world itself for one rank)
//   cp     context parallel: the ranks sharing one DP rank's samples, each
//          holding part of every sequence (null while cp = 1)
//   edp    expert data parallel: the DP x CP ranks holding the same experts
//          (dp while ep = 1)
//   pp     this rank's pipeline: the stages holding the same DP/TP piece
//   tp     tensor parallel (null while tp = 1)
//   ep     the expert all-to-all group (null while ep = 1)
//   tied   the first and last pipeline stages, which both hold the tied
//          embedding (null unless pp > 1 with tied embeddings; ranks of the
//          middle stages get a group of their own)
//
// Every group but `world` is split from the data world given at
// construction (parallel/backend.h: NCCL or host-staged MPI for CUDA
// tensors), or from the world itself when none is given (MPI on the CPU).
// So every data group has the data world's backend.
//
// Construction is collective: every rank of the world builds its
// ProcessGroups at the same point, each split in the same order. The groups
// live as long as this object; they are destroyed (NCCL communicators
// finalized) with it, which the trainer does before MPI is finalized.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/parallel_config.h"
#include "parallel/process_grid.h"

namespace moetrain::parallel {

class ProcessGroups {
 public:
  ProcessGroups(std::shared_ptr<Communicator> world, const ParallelConfig& config, bool tied_embeddings,
                std::unique_ptr<Communicator> data_world = nullptr);

  const ProcessGrid& grid() const { return grid_; }
  Communicator& world() const { return *world_; }
  Communicator& dp() const { return *dp_; }
  Communicator& edp() const { return *edp_; }
  Communicator& pp() const { return *pp_; }
  Communicator* tp() const { return tp_comm_.get(); }
  Communicator* ep() const { return ep_comm_.get(); }
  Communicator* cp() const { return cp_comm_.get(); }
  Communicator* tied() const { return tied_comm_.get(); }
  // The group a flat-parameter unit is replicated (and ZeRO-sharded) over:
  // edp for expert units, dp for the rest.
  Communicator& replicas(bool expert_unit) const { return expert_unit ? *edp_ : *dp_; }

  // The data groups' backend ("mpi", "mpi-staged", "nccl").
  std::string data_backend() const { return dp_->backend(); }

  // Communication since the last reset, per group and operation: keys
  // "<group> <op>" with group one of world, dp, cp, tp, pp, ep, edp, tied (the
  // data world's own calls, made only by a one-rank job, count as world).
  CommStats stats() const;
  void reset_stats();

 private:
  ProcessGrid grid_;
  // Members are destroyed in reverse order: the groups before the data
  // world they were split from (NCCL children before their parent).
  std::shared_ptr<Communicator> world_;
  std::unique_ptr<Communicator> data_world_;
  std::unique_ptr<Communicator> tp_comm_, dp_comm_, ep_comm_, edp_comm_, pp_comm_, tied_comm_, cp_comm_;
  Communicator* dp_ = nullptr;
  Communicator* edp_ = nullptr;
  Communicator* pp_ = nullptr;
};

}  // namespace moetrain::parallel
