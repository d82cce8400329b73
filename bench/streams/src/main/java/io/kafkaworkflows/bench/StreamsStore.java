package io.kafkaworkflows.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The atomic store's accounting in Kafka Streams, exactly-once v2, for bench/aggregation.py.
 *
 * <p>Same command stream and same accounting as the store and the Quix app: per request (the record
 * key) a state entry per seen job index, a count and the total from init; one completion record
 * ({"request_id", "completed", "total"}) when count == total; commands after that are ignored.
 * State lives in a RocksDB store with its changelog, committed every 1 s like the others.
 *
 * <p>Args: bootstrap, commands topic, output topic, application id, state dir, started file (the
 * epoch seconds of the first command processed are written there).
 */
public final class StreamsStore {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final String STORE = "accounting";

  private StreamsStore() {}

  static final class Accounting implements Processor<String, String, String, String> {
    private final Path started;
    private boolean first = true;
    private KeyValueStore<String, Integer> state;
    private ProcessorContext<String, String> context;

    Accounting(Path started) {
      this.started = started;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
      this.context = context;
      this.state = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<String, String> record) {
      if (first) {
        first = false;
        try {
          Files.writeString(started, Double.toString(System.currentTimeMillis() / 1000.0));
        } catch (java.io.IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }
      JsonNode command;
      try {
        command = JSON.readTree(record.value());
      } catch (java.io.IOException e) {
        return; // not a command: skipped, as the store dead-letters it
      }
      String request = record.key();
      Integer total = state.get(request + "\u0000total");
      int count = valueOr(state.get(request + "\u0000count"));
      if (total != null && count >= total) {
        return; // terminal: nothing changes any more
      }
      if ("init".equals(command.path("op").asText())) {
        if (total == null) {
          total = command.path("total").asInt();
          state.put(request + "\u0000total", total);
        }
      } else {
        String job = request + "\u0000job:" + command.path("job").asInt();
        if (state.get(job) != null) {
          return; // a duplicate
        }
        state.put(job, 1);
        count += 1;
        state.put(request + "\u0000count", count);
      }
      if (total != null && count >= total) {
        String done = "{\"request_id\":" + JSON.valueToTree(request) + ",\"completed\":" + count
            + ",\"total\":" + total + "}";
        context.forward(record.withValue(done));
      }
    }

    private static int valueOr(Integer value) {
      return value == null ? 0 : value;
    }
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String input = args[1];
    String output = args[2];
    String application = args[3];
    String stateDir = args[4];
    Path started = Path.of(args[5]);

    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.Integer()));
    // No record cache (the DSL's default has one): two runs on the 2-core machine measured 10,974
    // commands/s with it and 21,933 without; nearly every key (one per job) is new, so it only adds work.
    builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
        .process(() -> new Accounting(started), STORE)
        .to(output, Produced.with(Serdes.String(), Serdes.String()));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, application);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
    props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close();
      stopped.countDown();
    }));
    streams.setUncaughtExceptionHandler(e -> {
      e.printStackTrace();
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
          .SHUTDOWN_CLIENT;
    });
    streams.start();
    stopped.await();
  }
}
