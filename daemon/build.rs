//! Links the binaries that use libtorch with an rpath to it, so they run
//! without LD_LIBRARY_PATH (torch-sys exports the directory as
//! DEP_TCH_LIBTORCH_LIB).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // libtorch_cuda is reached only through static registration: keep
        // it linked, or CUDA is reported unavailable.
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists()
            && std::env::var("PETUUM_CUDA").as_deref() == Ok("1")
        {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
