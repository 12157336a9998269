//! Fault injection, Jepsen-style: the real gateway and responder binaries
//! run as separate processes against RabbitMQ; several users send hundreds
//! of messages while processes are killed, the broker restarts and sockets
//! drop. Every request is classified (answered / told it failed / lost) and
//! every chunk (shown once / repeat dropped / missing / shown twice); each
//! scenario prints its counts and asserts that nothing was lost or shown
//! twice.
//!
//! Scenarios run one at a time (they share the broker, and one restarts it).
//! The broker restart needs `FAULTS_BROKER_CONTROL=rabbitmqctl` (set by
//! `.ci/run`) and a local RabbitMQ that `rabbitmqctl` controls. The cluster
//! scenarios (`cluster`) need `FAULTS_CLUSTER=1` and RabbitMQ installed:
//! they start three nodes of their own.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod cluster;
mod model;
mod processes;
mod random_model;
mod scenarios;
mod sse;
