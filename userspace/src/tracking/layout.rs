//! Kernel layout discovery. aya-ebpf has no CO-RE, so the offsets of the kernel structure
//! fields the programs read are looked up in the running kernel's BTF at load time and passed
//! in as the `LAYOUT` global. Nothing is hardcoded: a kernel whose BTF lacks a field is
//! refused with the field's name.

use std::{fmt, fs, path::Path};

use bpfkill_common::KernelLayout;
use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

use crate::error::{Error, Result};

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
        {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF blob",
            )),
        }
    }
}

/// Parsed kernel BTF.
pub struct KernelBtf {
    types: TypeInformation,
}

impl KernelBtf {
    /// Parses `/sys/kernel/btf/vmlinux`.
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Parses a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Unsupported(format!(
                "{} is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF",
                path.display()
            )),
            _ => Error::io(format!("read {}", path.display()), e),
        })?;
        let types = TypeInformation::new(&Bytes(&data))
            .map_err(|e| Error::Unsupported(format!("cannot parse {}: {e:?}", path.display())))?;
        Ok(Self { types })
    }

    /// Byte offset of `path` (a dotted member path) inside `struct name`.
    pub fn offset_of(&self, name: &str, path: &str) -> Result<u32> {
        let missing = || Error::Unsupported(format!("BTF has no field {name}.{path}"));
        let id = self.types.id_of(name).ok_or_else(missing)?;
        match self.types.offset_of(id, path).map_err(|_| missing())? {
            (_, Offset::ByteOffset(off)) => Ok(off),
            (_, Offset::BitOffsetAndSize(..)) => Err(Error::Unsupported(format!(
                "{name}.{path} is a bitfield in this kernel's BTF"
            ))),
        }
    }

    /// Number of arguments of a tracepoint's `TP_PROTO` (without the hidden context pointer),
    /// from its `btf_trace_<name>` typedef.
    pub fn tracepoint_arity(&self, tracepoint: &str) -> Result<usize> {
        let name = format!("btf_trace_{tracepoint}");
        let missing = || Error::Unsupported(format!("BTF has no tracepoint prototype {name}"));
        let mut id = self.types.id_of(&name).ok_or_else(missing)?;
        // typedef -> pointer -> function prototype
        for _ in 0..4 {
            match self.types.from_id(id).ok_or_else(missing)? {
                TypeVariant::Typedef(t) => id = *t.tid(),
                TypeVariant::Ptr(p) => id = *p.tid(),
                TypeVariant::FuncProto(f) => return Ok(f.parameter_list().len().saturating_sub(1)),
                _ => return Err(missing()),
            }
        }
        Err(missing())
    }

    /// Computes the layout the kernel programs need.
    pub fn kernel_layout(&self, ns_per_tick: u32) -> Result<KernelLayout> {
        let task = |f| self.offset_of("task_struct", f);
        let exit_arity = self.tracepoint_arity("sched_process_exit")?;
        Ok(KernelLayout {
            task_pid: task("pid")?,
            task_tgid: task("tgid")?,
            task_start_boottime: task("start_boottime")?,
            task_real_parent: task("real_parent")?,
            task_group_leader: task("group_leader")?,
            task_signal: task("signal")?,
            task_exit_code: task("exit_code")?,
            signal_live: self.offset_of("signal_struct", "live")?,
            bprm_filename: self.offset_of("linux_binprm", "filename")?,
            exit_has_group_dead: u32::from(exit_arity >= 2),
            ns_per_tick,
            // Fields only the `ps` task iterator reads.
            task_state: task("__state").or_else(|_| task("state"))?,
            task_exit_state: task("exit_state")?,
            task_comm: task("comm")?,
            task_cred: task("cred")?,
            cred_euid: self.offset_of("cred", "euid")?,
            task_cgroups: task("cgroups")?,
            css_set_dfl_cgrp: self.offset_of("css_set", "dfl_cgrp")?,
            cgroup_kn: self.offset_of("cgroup", "kn")?,
            kernfs_node_id: self.offset_of("kernfs_node", "id")?,
            task_thread_pid: task("thread_pid")?,
            pid_level: self.offset_of("pid", "level")?,
            pid_numbers: self.offset_of("pid", "numbers")?,
            upid_size: self.size_of("upid")?,
            upid_ns: self.offset_of("upid", "ns")?,
            pidns_inum: self.offset_of("pid_namespace", "ns.inum")?,
            signal_sid_pid: self.offset_of(
                "signal_struct",
                &format!("pids[{}]", self.enum_value("pid_type", "PIDTYPE_SID")?),
            )?,
            task_mm: task("mm")?,
            mm_arg_start: self.offset_of("mm_struct", "arg_start")?,
            mm_arg_end: self.offset_of("mm_struct", "arg_end")?,
            mm_exe_file: self.offset_of("mm_struct", "exe_file")?,
            bprm_file: self.offset_of("linux_binprm", "file")?,
            file_inode: self.offset_of("file", "f_inode")?,
            inode_ino: self.offset_of("inode", "i_ino")?,
            inode_sb: self.offset_of("inode", "i_sb")?,
            sb_dev: self.offset_of("super_block", "s_dev")?,
            signal_flags: self.offset_of("signal_struct", "flags")?,
            signal_pgid_pid: self.offset_of(
                "signal_struct",
                &format!("pids[{}]", self.enum_value("pid_type", "PIDTYPE_PGID")?),
            )?,
            // Not the kernel's: the loader sets it (`--kernel-log`).
            log_level: bpfkill_common::kernel_log::OFF,
        })
    }

    /// Size in bytes of `struct name`.
    pub fn size_of(&self, name: &str) -> Result<u32> {
        let missing = || Error::Unsupported(format!("BTF has no sized type {name}"));
        let id = self.types.id_of(name).ok_or_else(missing)?;
        let size = self.types.size_of(id).map_err(|_| missing())?;
        u32::try_from(size).map_err(|_| missing())
    }

    /// Value of enumerator `value` of `enum name`.
    pub fn enum_value(&self, name: &str, value: &str) -> Result<u64> {
        let missing = || Error::Unsupported(format!("BTF has no enumerator {name}::{value}"));
        let id = self.types.id_of(name).ok_or_else(missing)?;
        match self.types.from_id(id).ok_or_else(missing)? {
            TypeVariant::Enum(e) => e
                .named_value_list()
                .iter()
                .find(|v| v.name == value)
                .and_then(|v| match v.value {
                    btfparse::Integer32Value::Unsigned(u) => Some(u64::from(u)),
                    btfparse::Integer32Value::Signed(i) => u64::try_from(i).ok(),
                })
                .ok_or_else(missing),
            _ => Err(missing()),
        }
    }
}

/// Human-readable rendering of a layout, for `status`.
pub struct LayoutDisplay<'a>(pub &'a KernelLayout);

impl fmt::Display for LayoutDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.0;
        write!(
            f,
            "task_struct{{pid@{} tgid@{} start_boottime@{} real_parent@{} group_leader@{} signal@{} exit_code@{}}} \
             signal_struct.live@{} linux_binprm.filename@{} sched_process_exit.group_dead={}",
            l.task_pid,
            l.task_tgid,
            l.task_start_boottime,
            l.task_real_parent,
            l.task_group_leader,
            l.task_signal,
            l.task_exit_code,
            l.signal_live,
            l.bprm_filename,
            if l.exit_has_group_dead != 0 { "arg" } else { "signal->live" },
        )
    }
}

/// A field of a classic tracepoint record, from its tracefs `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceField {
    /// Field name.
    pub name: String,
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Parses the fields of a tracefs `format` file (`field:TYPE NAME; offset:N; size:N; ...`).
pub fn parse_trace_format(text: &str) -> Vec<TraceField> {
    text.lines()
        .filter_map(|line| {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d.trim());
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.trim().parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.trim().parse().ok();
                }
            }
            let name = decl?.rsplit([' ', '*']).next()?;
            let name = name.split('[').next()?.to_string();
            Some(TraceField {
                name,
                offset: offset?,
                size: size?,
            })
        })
        .filter(|f| !f.name.starts_with("common_"))
        .collect()
}

/// Reads a tracepoint's record layout from tracefs (`category/name`).
pub fn trace_format(tracefs: &Path, tracepoint: &str) -> Result<Vec<TraceField>> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(parse_trace_format(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fork_format_of_6_18() {
        let text = "name: sched_process_fork\nID: 300\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n\nprint fmt: \"...\"\n";
        let fields = parse_trace_format(text);
        let find = |n: &str| fields.iter().find(|f| f.name == n).map(|f| f.offset);
        assert_eq!(find("parent_pid"), Some(12));
        assert_eq!(find("child_pid"), Some(20));
        assert_eq!(find("parent_comm"), Some(8));
        assert!(find("common_type").is_none());
    }

    #[test]
    fn parses_fork_format_of_6_1() {
        let text = "format:\n\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        let fields = parse_trace_format(text);
        assert_eq!(fields[0].name, "parent_comm");
        assert_eq!(
            fields[1],
            TraceField {
                name: "parent_pid".into(),
                offset: 24,
                size: 4
            }
        );
        assert_eq!(fields[3].offset, 44);
    }

    #[test]
    fn running_kernel_layout_when_btf_present() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} not present");
            return;
        }
        let btf = KernelBtf::load().expect("parse vmlinux BTF");
        let l = btf.kernel_layout(10_000_000).expect("layout");
        assert!(l.task_tgid > 0 && l.task_start_boottime > 0 && l.signal_live > 0);
        assert_ne!(l.task_pid, l.task_tgid);
    }
}
