fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runway/v1/runway.proto");
    tonic_prost_build::configure().compile_protos(&["proto/runway/v1/runway.proto"], &["proto"])?;
    Ok(())
}
