"""The test suite, and the helpers it shares with the benchmarks (`tests.s3server`,
`tests.kube_emulator`, ...): a package, so both import them by name."""
