//! Parser for /proc/<pid>/maps lines.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub path: String,
}

impl MapEntry {
    pub fn is_special(&self) -> bool {
        matches!(
            self.path.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
    }
    pub fn overlaps(&self, s: u64, e: u64) -> bool {
        self.start < e && s < self.end
    }
}

pub fn parse_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    let mut prot = 0;
    if perms.first() == Some(&b'r') {
        prot |= libc::PROT_READ as u32;
    }
    if perms.get(1) == Some(&b'w') {
        prot |= libc::PROT_WRITE as u32;
    }
    if perms.get(2) == Some(&b'x') {
        prot |= libc::PROT_EXEC as u32;
    }
    Some(MapEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        prot,
        shared: perms.get(3) == Some(&b's'),
        offset,
        inode,
        path,
    })
}

pub fn parse(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

pub fn read_self() -> std::io::Result<Vec<MapEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/maps")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_lines() {
        let m =
            parse_line("7f36-7f38 r-xp 00027000 fe:00 325843                     /usr/lib/ld.so")
                .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset, m.inode),
            (0x7f36, 0x7f38, 0x27000, 325843)
        );
        assert_eq!(m.prot, (libc::PROT_READ | libc::PROT_EXEC) as u32);
        assert_eq!(m.path, "/usr/lib/ld.so");
        let v = parse_line("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]")
            .unwrap();
        assert!(v.is_special());
        let a = parse_line("7ffc-7ffd rw-s 00000000 00:00 0 ").unwrap();
        assert!(a.shared && a.path.is_empty());
    }
}
