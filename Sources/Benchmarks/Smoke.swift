/// `--smoke`: the benchmarks run with tiny counts, only to prove that each part still runs.
let isSmokeRun = CommandLine.arguments.contains("--smoke")
