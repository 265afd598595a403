//! sipgate-sidecar: takes sipgate.io Push API webhooks in front of Zammad.

pub mod calls;
pub mod decide;
pub mod fanout;
pub mod sipgate;
pub mod store;

/// Generated protobuf and tonic code for `proto/sidecar/v1`.
pub mod proto {
    tonic::include_proto!("sidecar.v1");
    /// Descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sidecar_descriptor");
}
