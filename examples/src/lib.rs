//! Examples of embedding the Cake Agents crates; see `examples/README.md`. The library itself
//! is empty: each example is a `[[example]]` target (`cargo run -p cake-examples --example …`).
