//! Benchmarks for settled live in `benches/`.
