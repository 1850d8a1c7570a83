//! A value that remembers its last state and tells every listener, in one order.
//!
//! Run it with `cargo run -p keyrunner-subject --example listen`.

use std::sync::{Arc, Mutex};

use keyrunner_subject::Subject;

fn main() {
    let temperature = Subject::with_value(20);

    // `immediate`: the listener first gets the last value.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let display = temperature.listen(
        move |celsius: &i32| {
            println!("display: {celsius} °C");
            log.lock()
                .expect("no one panics holding the log")
                .push(*celsius);
        },
        true,
    );

    // A listener may emit from inside its callback: the nested value is delivered after the
    // current one has reached every listener.
    let alarm_source = temperature.clone();
    let _alarm = temperature.listen(
        move |celsius: &i32| {
            if *celsius > 30 {
                println!("alarm: too hot, cooling down");
                alarm_source.next(25);
            }
        },
        false,
    );

    temperature.next(21);
    temperature.next(35);
    assert_eq!(temperature.last().as_deref(), Some(&25));

    drop(display); // dropping the subscription unsubscribes
    temperature.next(22);
    assert_eq!(
        *seen.lock().expect("no one panics holding the log"),
        [20, 21, 35, 25]
    );
}
