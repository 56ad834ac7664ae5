//! Integration tests of the RLS reference server with real clients: the tonic client, the
//! `meshguard-rls` binary, and stock Envoy 1.40's native `envoy.filters.http.ratelimit`
//! filter. One binary, one module per topic. The Redis tests start their own `redis-server`
//! (Debian package `redis-server`, installed by `./build.sh setup`) and fail, not skip, when
//! it is missing.

mod accounting;
mod binary;
mod envoy;
mod fault;
mod redis;
mod support;
