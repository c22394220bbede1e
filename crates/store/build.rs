//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the directory, and
//! cargo does not otherwise know it depends on it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
