//! What the subcommands do: `serve`, and the clients that talk to a running
//! server over gRPC (`settings`, `calls`, `events`, `requests`, `watch`,
//! `bridge`), and the generated `completions` and `man` page. The flags
//! themselves live in [`crate::config`]; printing in [`output`]; exit codes
//! in [`crate::client::exit_code`].

mod bridge;
mod calls;
pub mod docs;
mod events;
mod flows;
pub mod output;
mod requests;
mod serve;
mod settings;
mod watch;

pub use bridge::run_bridge;
pub use calls::run_calls;
pub use events::run_events;
pub use flows::run_flows;
pub use requests::run_requests;
pub use serve::run_serve;
pub use settings::run_settings;
pub use watch::run_watch;

use crate::{client, config::ClientArgs};

/// Where the client flags say the server is.
pub fn endpoint(args: &ClientArgs) -> client::Endpoint {
    client::Endpoint {
        server: args.server.clone(),
        token: args.grpc_token.clone(),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    }
}
