import Essentials
import Supervision

#if canImport(Glibc)
import Glibc
#endif

/// System V shared memory that session programs leave behind. x11vnc and Xvfb share screen
/// images through MIT-SHM segments; a program killed with SIGKILL never removes its own, and
/// measured here, killed x11vncs filled the host's 4096 segments until every new x11vnc failed
/// ("shmget: No space left on device").
enum SharedMemory {
    /// Removes segments owned by `uid` that nobody has attached and whose creator is dead (a
    /// live creator may be about to attach, or to hand the id to the X server). Returns how many.
    @discardableResult
    static func removeOrphans(uid: UInt32) -> Int {
        guard let table = readSmallFile("/proc/sysvipc/shm") else { return 0 }
        var removed = 0
        for line in table.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            // key shmid perms size cpid lpid nattch uid …
            guard f.count > 7, let id = Int32(f[1]), let cpid = Int32(f[4]), let attached = Int(f[6]), let owner = UInt32(f[7]) else { continue }
            guard owner == uid, attached == 0, kill(cpid, 0) != 0, errno == ESRCH else { continue }
            if shmctl(id, IPC_RMID, nil) == 0 { removed += 1 }
        }
        return removed
    }
}
