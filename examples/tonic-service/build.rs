//! Generates the `Summarizer` gRPC service (server and client) from a definition written in
//! Rust: tonic-build's `manual` module needs no `.proto` file and no `protoc`. The messages are
//! plain structs deriving `prost::Message` (src/main.rs), sent with tonic-prost's codec, so the
//! wire format is ordinary protobuf and any gRPC client can call the service with the `.proto`
//! in the crate docs.

fn main() {
    let summarize = tonic_build::manual::Method::builder()
        .name("summarize")
        .route_name("Summarize")
        .input_type("crate::proto::Text")
        .output_type("crate::proto::Summary")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Summarizer")
        .package("tollgate.example")
        .method(summarize)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
