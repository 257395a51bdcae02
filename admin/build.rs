// `sqlx::migrate!` embeds the files found in migrations/<service>/ at compile time; it tracks the
// files it saw, but not files added later. Re-running this script when the folder changes makes
// cargo rebuild the crate, so a new migration file is always picked up.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
