//! Keyed topics that exist while someone holds them.
//!
//! Run it with `cargo run -p keyrunner-pub-sub --example topics`.

use keyrunner_pub_sub::PubSub;

fn main() {
    // Build progress per branch, in percent.
    let progress: PubSub<String, u32> = PubSub::new();

    let main = progress.listen(
        "main".to_owned(),
        |percent: &u32| println!("main: {percent}%"),
        false,
    );
    progress.next("main".to_owned(), 10);
    progress.next("main".to_owned(), 60);

    // Nobody listens to "dev": the value is dropped and nothing is allocated.
    progress.next("dev".to_owned(), 99);
    println!("dev allocated: {}", progress.is_allocated("dev"));

    // A late listener asks for the last value first.
    let late = progress.listen(
        "main".to_owned(),
        |percent: &u32| println!("late listener: {percent}%"),
        true,
    );
    progress.next("main".to_owned(), 100);

    drop((main, late)); // the last holder leaves: the topic is forgotten
    assert!(progress.is_empty());
}
