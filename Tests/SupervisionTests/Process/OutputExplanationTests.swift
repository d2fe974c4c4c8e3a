import Supervision
import Testing

/// Which of a failed program's lines its failure reason shows.
@Suite struct OutputExplanationTests {
    @Test func aFatalLineOutranksTheLastLines() {
        let chromium = [
            "[1:1:ERROR:bus.cc(407)] Failed to connect to the bus",
            "[1:1:FATAL:process_singleton_posix.cc(1143)] Socket path too long: /run/k/…/SingletonSocket",
            "[0101/000000.000:ERROR:file_io_posix.cc(145)] open /proc/self/…: No such file",
            "[0101/000000.000:ERROR:elf_dynamic_array_reader.h(64)] tag not found",
            "[0101/000000.000:ERROR:directory_reader_posix.cc(43)] opendir: No such file",
        ]
        #expect(OutputSink.explanation(chromium) == [chromium[1]] + chromium.suffix(3))
    }

    @Test func withoutAFatalLineTheLastErrorLineLeads() {
        let lines = ["starting", "error: cannot open display :7", "retrying", "giving up", "bye"]
        #expect(OutputSink.explanation(lines) == [lines[1], "retrying", "giving up", "bye"])
    }

    @Test func whatIsAlreadyAmongTheLastLinesIsNotRepeated() {
        #expect(OutputSink.explanation(["a", "b", "FATAL: c"]) == ["a", "b", "FATAL: c"])
        #expect(OutputSink.explanation(["x", "y", "z", "w"]) == ["y", "z", "w"])
        #expect(OutputSink.explanation([]) == [])
    }
}
