"""Data-parallel training over MPI (issue 19): see comm.py for the scheme.

`tinynet train --distributed mpi` under `mpirun -n P`; in Python,
`train(net, opt, data, cfg, comm=get_comm("mpi"))`.
"""
from tinynet.distributed.account import CommAccount
from tinynet.distributed.comm import LOCAL, LocalComm, MPIComm, get_comm, pack_upper, unpack_upper
from tinynet.distributed.sharding import RowShardedGenerator, shard_bounds, sharded
from tinynet.distributed.support import check_distributable, supported

__all__ = ["CommAccount", "LOCAL", "LocalComm", "MPIComm", "get_comm", "pack_upper", "unpack_upper",
           "RowShardedGenerator", "shard_bounds", "sharded", "supported", "check_distributable"]
