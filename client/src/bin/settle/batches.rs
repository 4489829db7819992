//! Cutting a file of events into requests without splitting a linked chain.

/// End indexes (exclusive) of consecutive requests of at most `events_max` events, each
/// ending at a chain boundary. `linked[i]` says whether event `i` links to the next one.
/// Errors with the first index of a chain longer than `events_max`.
pub fn request_ends(linked: &[bool], events_max: usize) -> Result<Vec<usize>, usize> {
    let mut ends = Vec::new();
    let mut start = 0;
    while start < linked.len() {
        let limit = (start + events_max).min(linked.len());
        // The last boundary at or before `limit`: after an event that does not link on.
        let end = (start + 1..=limit)
            .rev()
            .find(|&end| end == linked.len() || !linked[end - 1])
            .ok_or(start)?;
        ends.push(end);
        start = end;
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_stay_whole() {
        let linked = [false, true, true, false, false];
        assert_eq!(
            request_ends(&linked, 2),
            Err(1),
            "a chain of 3 cannot fit 2"
        );
        assert_eq!(request_ends(&linked, 3), Ok(vec![1, 4, 5]));
        assert_eq!(request_ends(&linked, 8189), Ok(vec![5]));
        assert_eq!(request_ends(&[], 3), Ok(vec![]));
        // An open chain at the end of the file is sent as is: the server answers
        // linked_event_chain_open for it.
        assert_eq!(request_ends(&[false, true], 1), Ok(vec![1, 2]));
    }
}
