//! Links the binaries that use libtorch with an rpath to it, so they run
//! without LD_LIBRARY_PATH (torch-sys exports the directory as
//! DEP_TCH_LIBTORCH_LIB).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=PETUUM_CUDA");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // libtorch_cuda is reached only through static registration: keep
        // it linked, or CUDA is reported unavailable. The CUDA libraries
        // it needs (cuBLAS, cuDNN, ...) are found at run time, so a GPU
        // build can be linked on a machine that lacks them.
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists()
            && std::env::var("PETUUM_CUDA").as_deref() == Ok("1")
        {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed,--allow-shlib-undefined");
        }
    }
}
