"""childkit benchmarks: each module measures childkit beside its peers in one run."""
