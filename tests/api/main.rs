//! courier's integration tests, one binary: each module tells the story of one part of the
//! server as a client sees it, against a server bound to port 0 (in this process, or the
//! binary in a process of its own). [`helpers`] holds what they share.

mod abuse;
mod access;
mod architecture;
mod background_jobs;
mod browser;
mod bus;
mod chaos;
mod cluster;
mod config;
mod contracts;
mod data;
mod durability;
mod export_memory;
mod files;
mod helpers;
mod http;
mod lifecycle;
mod realtime;
mod upgrade;
mod upstream;
