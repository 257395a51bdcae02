//! Compresses the common-password list (83 KB of text) into OUT_DIR, so auth.wasm carries about
//! 30 KB of zlib data instead; `domain::password` inflates it on first use.

use std::path::PathBuf;

const LIST: &str = "src/domain/common-passwords.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    let text = std::fs::read(LIST).unwrap_or_else(|err| panic!("Failed to read {LIST}: {err}"));
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&text, 10);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("common-passwords.zlib");
    std::fs::write(&out, compressed).unwrap_or_else(|err| panic!("Failed to write {}: {err}", out.display()));
}
