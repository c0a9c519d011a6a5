/work/main/bench/loadgen/target/debug/deps/loadgen-bf2113441cfaff5b.d: src/main.rs src/common.rs src/fanout.rs src/hold.rs src/idle.rs src/rooms.rs src/sse.rs Cargo.toml

/work/main/bench/loadgen/target/debug/deps/libloadgen-bf2113441cfaff5b.rmeta: src/main.rs src/common.rs src/fanout.rs src/hold.rs src/idle.rs src/rooms.rs src/sse.rs Cargo.toml

src/main.rs:
src/common.rs:
src/fanout.rs:
src/hold.rs:
src/idle.rs:
src/rooms.rs:
src/sse.rs:
Cargo.toml:

# env-dep:CARGO_PKG_VERSION=0.1.0
# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
