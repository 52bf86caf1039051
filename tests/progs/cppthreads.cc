// iostreams and std::thread across a checkpoint: rounds of 4 threads under a mutex.
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 10;
    std::mutex m;
    long sum = 0;
    for (int round = 0; round < rounds; round++) {
        std::vector<std::thread> ts;
        for (int i = 0; i < 4; i++)
            ts.emplace_back([&, i] {
                for (int k = 0; k < 20000; k++) {
                    std::lock_guard<std::mutex> g(m);
                    sum += i + k % 7;
                }
            });
        for (auto &t : ts) t.join();
        std::cout << "round " << round << " sum " << sum << std::endl;
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    std::cout << "done" << std::endl;
}
