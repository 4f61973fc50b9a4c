//! What oa-run makes of the `outputPath` an OBS reports. A broken or hostile OBS can report any
//! path; it is kept as reported (it is the only record of where the file is) and flagged when
//! it is not what was planned.

use crate::manifest::PathFlag;

/// `path` with `\` read as `/` and `.`/`..` applied, as components (OBS on Windows reports
/// either separator). `None` when `..` climbs above the start.
fn components(path: &str) -> Option<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Whether `path` lies inside `dir` (lexically; case-sensitive).
pub fn inside(dir: &str, path: &str) -> bool {
    match (components(dir), components(path)) {
        (Some(d), Some(p)) => p.len() > d.len() && p[..d.len()] == d[..],
        _ => false,
    }
}

/// The flags for a reported path: not named as planned (OBS adds ` (2)` when the file exists,
/// or the name was changed outside oa-run), or not in the directory OBS said it records to.
pub fn flags(path: &str, planned_name: &str, record_dir: Option<&str>) -> Vec<PathFlag> {
    let mut f = Vec::new();
    let stem = path
        .rsplit(['/', '\\'])
        .next()
        .map(|file| file.rsplit_once('.').map_or(file, |(stem, _)| stem));
    if stem != Some(planned_name) {
        f.push(PathFlag::NotPlannedName);
    }
    if let Some(dir) = record_dir
        && !inside(dir, path)
    {
        f.push(PathFlag::OutsideRecordDirectory);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_inside_only_lexically_below_the_directory() {
        assert!(inside("/rec", "/rec/a.mkv"));
        assert!(inside("/rec/", "/rec/sub/./a.mkv"));
        assert!(inside("C:\\Users\\p\\Videos", "C:/Users/p/Videos/a.mkv"));
        assert!(!inside("/rec", "/rec"));
        assert!(!inside("/rec", "/record/a.mkv"));
        assert!(!inside("/rec", "/rec/../etc/passwd"));
        assert!(!inside("/rec", "/../../rec/a.mkv"), "climbs above the root");
        assert!(!inside("/rec", "/etc/shadow"));
    }

    #[test]
    fn flags_say_what_is_unexpected() {
        assert!(flags("/rec/m1_p1.mkv", "m1_p1", Some("/rec")).is_empty());
        assert_eq!(
            flags("/rec/m1_p1 (2).mkv", "m1_p1", Some("/rec")),
            vec![PathFlag::NotPlannedName]
        );
        assert_eq!(
            flags("/home/x/.bashrc", "m1_p1", Some("/rec")),
            vec![PathFlag::NotPlannedName, PathFlag::OutsideRecordDirectory]
        );
        assert_eq!(
            flags("/tmp/m1_p1.mkv", "m1_p1", Some("/rec")),
            vec![PathFlag::OutsideRecordDirectory]
        );
        assert!(flags("/tmp/m1_p1.mkv", "m1_p1", None).is_empty());
    }
}
