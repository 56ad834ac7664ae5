//! A filter whose policy has not landed yet: loads and validates its config, then lets every
//! request through untouched.
//!
//! Each of the four filter crates starts as this, so the artifacts, Envoy configs and the
//! transparency suite exist before the policies do. It is deliberately the cheapest possible
//! filter: no host call on the request path.

use meshguard_policy::idle::IdleConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config;

/// Root context of an idle filter named `filter` (e.g. `"load_shed"`).
#[derive(Debug)]
pub struct IdleRoot {
    filter: &'static str,
    config: Option<IdleConfig>,
}

impl IdleRoot {
    /// A root context for the filter `filter`.
    pub const fn new(filter: &'static str) -> Self {
        Self {
            filter,
            config: None,
        }
    }
}

impl Context for IdleRoot {}

impl RootContext for IdleRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        self.config = config::configure::<IdleConfig>(self.filter, bytes.as_deref());
        if let Some(c) = &self.config {
            log::info!(
                "meshguard {}: configured (mode {}); this filter has no policy yet and passes all traffic",
                self.filter,
                c.mode.as_str()
            );
        }
        self.config.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PassThrough))
    }
}

/// Lets every request and response through without a single host call.
#[derive(Debug)]
struct PassThrough;

impl Context for PassThrough {}
impl HttpContext for PassThrough {}
