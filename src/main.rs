fn main() { println!("udrbd daemon: not yet"); }
