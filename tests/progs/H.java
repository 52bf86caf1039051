// A JVM with a long compute loop (the JIT compiles it), one line per step.
public class H {
    public static void main(String[] a) throws Exception {
        int steps = a.length > 0 ? Integer.parseInt(a[0]) : 30;
        long s = 1;
        for (int i = 0; i < steps; i++) {
            for (int j = 0; j < 20_000_000; j++) s = (s * 31 + j) % 1_000_000_007L;
            System.out.println(i + " " + s);
            Thread.sleep(20);
        }
    }
}
