//! Regenerates petuum-proto's Rust code from petuum.proto.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    tonic_build::configure()
        .out_dir(root.join("src"))
        // Bulk byte fields decode as slices of the receive buffer, without
        // a copy.
        .bytes([
            ".petuum.v1.Envelope.payload",
            ".petuum.v1.Reply.payload",
            ".petuum.v1.UploadChunk.data",
        ])
        .compile_protos(&[root.join("petuum.proto")], &[root.clone()])?;
    println!("wrote {}", root.join("src/petuum.v1.rs").display());
    Ok(())
}
