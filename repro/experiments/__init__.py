"""Running experiments: training, sampling, evaluation, campaigns, re-runs against the goldens,
benchmarks and the GPU call. Above the library (models, objectives, data, metrics and the helpers at the
package root), below the commands; it may use the evidence's arithmetic (speedups, curve checks)."""
