//! End-to-end tests of the pipeline: browser WebSocket → gateway → RabbitMQ →
//! responder → per-user reply queue → browser. Everything is real: the
//! services run in-process on port 0 against a real RabbitMQ, and the clients
//! speak WebSocket over TCP. One binary, one module per capability.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod stack;

mod abuse;
mod cancel;
mod delivery;
mod failures;
mod identity;
mod model;
mod openai;
mod openai_agents;
mod openai_readers;
mod rest;
mod rooms;
mod round_trip;
mod scale;
mod security;
mod status;
mod streaming;
