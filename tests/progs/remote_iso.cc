// The isolation check in C++ iostreams: after mos_sync-style file sync (ready.1 / go.1 in
// $MOS_SYNC, where the test migrates it), writes cpp_stream.txt with std::ofstream in
// argv[1] (a directory in the home node's /tmp) and reads home_only.txt with std::ifstream.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

int main(int argc, char **argv) {
    if (argc < 2) return 90;
    std::string d = argv[1], sync = std::getenv("MOS_SYNC");
    std::ofstream(sync + "/ready.1").close();
    while (!std::ifstream(sync + "/go.1")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::ofstream out(d + "/cpp_stream.txt");
    out << "written by ofstream" << std::endl;
    out.close();
    std::ifstream in(d + "/home_only.txt");
    std::string line;
    std::getline(in, line);
    std::cout << "home_only: " << (in ? "found (" + line + ")" : std::string("missing")) << std::endl;
    return 0;
}
