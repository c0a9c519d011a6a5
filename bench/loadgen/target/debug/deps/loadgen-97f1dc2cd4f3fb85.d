/work/main/bench/loadgen/target/debug/deps/loadgen-97f1dc2cd4f3fb85.d: src/main.rs src/common.rs src/fanout.rs src/hold.rs src/idle.rs src/rooms.rs src/sse.rs Cargo.toml

/work/main/bench/loadgen/target/debug/deps/libloadgen-97f1dc2cd4f3fb85.rmeta: src/main.rs src/common.rs src/fanout.rs src/hold.rs src/idle.rs src/rooms.rs src/sse.rs Cargo.toml

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
