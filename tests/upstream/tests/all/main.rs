//! Integration tests of the test upstream, with real clients: hyper HTTP/1.1, hyper h2c
//! (prior knowledge), raw TCP, and the tonic client. One binary, one module per topic.

mod binary;
mod capacity;
mod control;
mod echo;
mod failure;
mod grpc;
mod knobs;
mod reset;
mod support;
